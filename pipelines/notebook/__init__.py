"""Notebook experiments (experiment.py) and their plots (plots.py), for
notebooks/mnist_experiment.ipynb.
"""
