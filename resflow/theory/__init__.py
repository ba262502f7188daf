"""Mean-field predictions (predict.py), laid beside measurements (overlay.py) and told in words (text.py)."""
