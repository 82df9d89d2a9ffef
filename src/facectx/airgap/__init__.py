"""Training on an air-gapped GPU machine: `pack` at home, `run` there, `import` the results home."""
