"""Pictures: instance overlays, legends, PR curves, confusion matrices, training curves."""
