"""Every picture the package draws.

* :mod:`trianflow.viz.images` - torch images for tensorboard (flow colour wheel, grey scalar maps,
  dots on an image); no matplotlib.
* :mod:`trianflow.viz.plots` - matplotlib figures (trajectory top view coloured by error, error
  along the path, the figures of the VO report, depth / error colour maps); matplotlib is imported
  inside the functions only, never ``evo.tools.plot``.

Used by the trainer's tensorboard images, :mod:`trianflow.report` and the CLI alike.
"""
