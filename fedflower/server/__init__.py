"""What runs on the server: the checked FedAvg base, server optimizers, the async loop, the app."""
