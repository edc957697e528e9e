"""Built-in debiasing methods, registered through the `tiwbench.methods` entry points."""
