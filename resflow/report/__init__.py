"""What a person reads: Rich tables and headlines (terminal/) and matplotlib figures (figures/).

Reads DataFrames and plain values only; never imports torch or the models.
"""
