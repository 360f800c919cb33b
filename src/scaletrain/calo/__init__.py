"""calo."""
