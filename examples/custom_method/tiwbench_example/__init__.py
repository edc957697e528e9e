"""An example tiwbench plugin package."""
