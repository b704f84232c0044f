"""calbridge cronofy provider plugin."""
