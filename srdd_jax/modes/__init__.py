"""What each mode of `python -m srdd_jax.main` does, one module per mode's work; `experiment.run`
dispatches to them. Every mode receives the model config it runs with (trained, loaded or
derived) as an argument and leaves the user's config untouched."""
