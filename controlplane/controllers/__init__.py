"""Controllers: one module per controller, on the shared framework in base.py."""
