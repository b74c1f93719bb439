"""Applications built on seglab's public Python API; the engine packages never import them.

`seglab.apps.demo`: `seglab demo`, the README's main job (train, reload, predict, evaluate, write the results).
"""
