"""Model definitions: the contract every model meets (contract.py), the built-in models
(half_plus_two.py, mnist.py), the standard and retraining wiring of a model's parts into TFX
pipelines (standard.py, retraining_pipeline.py, resolvers.py), the registry that finds
them, and the model-project scaffold (scaffold.py, templates/). Imports only the base
modules (config, outcomes) and components/.
"""
