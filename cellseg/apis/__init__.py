"""What the command lines do, as functions: config helpers, prediction, the test and submission
run. The top layer: it may use every other one, and none uses it."""
