"""`facectx hallucinate-dataset`: every photo of a dataset through a trained model, in shards.

    model.py    --model: a registry URI (models:/NAME@alias, models:/NAME/VERSION) or a checkpoint folder
    photos.py   one photo -> face, landmarks, crop and mask, as validate and prepare make them (worker processes)
    frames.py   encoding frames (PNG or WebP) and the sample grid
    output.py   OUT as a folder or an s3:// prefix: the model stamp, whole shards, the gathered tables
    shard.py    one shard: the validation suite, the generator in batches, frames + its manifest, written whole
    run.py      the plan (shards of a fixed number of photos), resume, gather

One implementation: the CLI, the DVC stage `hallucinate` and the Kubeflow pipeline call run.py.
"""
