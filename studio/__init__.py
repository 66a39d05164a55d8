"""Studio: run generative image models on your own machine and review every result."""

__version__ = "0.1.0"
