"""Tasks: data, model and metric for each experiment (MNIST now; POS tagging and parsing later)."""
