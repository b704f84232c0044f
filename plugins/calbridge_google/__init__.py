"""calbridge google provider plugin."""
