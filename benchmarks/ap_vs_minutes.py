"""The curve a user with a time budget needs: CoNSeP mask AP50 against the CPU minutes of
training, one line per recipe, from the table docs/results/ap_vs_minutes.csv (each row names the
docs/results.md section it comes from).

    python benchmarks/ap_vs_minutes.py [--table docs/results/ap_vs_minutes.csv]
        [--out docs/images/ap_vs_cpu_minutes.png]

Prints the table it plotted, sorted by recipe and minutes.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--table', default=str(REPO / 'docs/results/ap_vs_minutes.csv'))
    parser.add_argument('--out', default=str(REPO / 'docs/images/ap_vs_cpu_minutes.png'))
    args = parser.parse_args(argv)
    from cellseg.visualization.visualize import new_figure, save_figure

    with open(args.table) as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith('#')))
    by_recipe: dict[str, list[dict]] = {}
    for r in rows:
        by_recipe.setdefault(r['recipe'], []).append(r)
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    print('recipe, iterations, training minutes (1 thread, bf16), mask AP50 (seeds)')
    for recipe, points in sorted(by_recipe.items()):
        points.sort(key=lambda r: float(r['training_minutes']))
        x = [float(r['training_minutes']) for r in points]
        y = [float(r['ap50']) for r in points]
        ax.plot(x, y, marker='o', label=recipe)
        for r in points:
            print(f"{recipe}, {r['iterations']}, {float(r['training_minutes']):.1f}, "
                  f"{float(r['ap50']):.3f} ({r['seeds']})")
            ax.annotate(f"{r['iterations']} it", (float(r['training_minutes']), float(r['ap50'])),
                        textcoords='offset points', xytext=(4, -10), fontsize=7)
    ax.axhline(0.40, color='grey', linestyle='--', linewidth=0.8)
    ax.text(1, 0.405, 'goal 0.40 (issue 28)', fontsize=7, color='grey')
    ax.set_xlabel('training minutes, one CPU thread, bfloat16')
    ax.set_ylabel('CoNSeP test mask AP50 (maxDets 100)')
    ax.set_title('From-scratch recipes: AP50 against CPU time')
    ax.set_xlim(left=0)
    ax.set_ylim(0, 0.45)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    print(f'wrote {save_figure(fig, args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
