"""What the command lines do, as functions: their options and errors, data paths, the run's
classes, the CPU fallback, training, prediction, the test loop and submission, k-fold tables,
label-folder scoring, anchor statistics. The top layer: it may use every other one, and none
uses it."""
