"""Score models. Importing this package registers every model name."""
