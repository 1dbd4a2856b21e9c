"""Optional analysis of the blocks: what they cost, what they attend to.

Not imported by :mod:`nonlocal_plugin`: these modules need
``mmengine.analysis`` and, for pictures, matplotlib, so they are imported
where used (``tools/get_flops.py``, ``tools/analyze_attention.py``).

* :mod:`.flops`: mmengine's ``FlopAnalyzer`` with handles for the fused
  attention (SDPA), the package's custom kernels, softmax, means and pooling.
* :mod:`.complexity`: a config's params and FLOPs, whole and per block.
* :mod:`.capture`: the attention rows of chosen queries, per block, and
  GCNet's query-independence statistic (https://arxiv.org/abs/1904.11492).
* :mod:`.overlay`: PNG overlays of those maps on the image.
* :mod:`.attention_report`: both over a set of images.
* :mod:`.models`: build a config's model and its inputs (mmdet, mmseg).
* :mod:`.cli`: the two tools' command lines.
"""
