"""Command-line interface: parsing only, the work lives in the library modules."""
