"""A fedflower strategy plugin: coordinate-wise trimmed mean."""
