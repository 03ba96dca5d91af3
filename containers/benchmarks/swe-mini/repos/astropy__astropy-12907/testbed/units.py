def scale(value, factor):
    """value times factor."""
    return value + factor
