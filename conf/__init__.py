"""fedflower's Hydra configs, shipped inside the package so an installed fedflower finds them."""
