"""The COCO caption metrics (pycocoevalcap) and the evaluator that decodes ids and scores them, outside the sandbox."""
