"""The bottom layer: what every other package may import (errors, registries, paths).
Imports nothing from the project."""
