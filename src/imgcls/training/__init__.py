"""Training: the stage driver (`driver`), its strategies (`plain`, `transfer`) and their shared steps."""
