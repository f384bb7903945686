"""Built-in strategy plugins, one algorithm per module, registered as entry points."""
