"""Built-in dataset recipes, registered through the `tiwbench.datasets` entry points."""
