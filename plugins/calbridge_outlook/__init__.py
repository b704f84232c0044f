"""calbridge outlook provider plugin."""
