"""The method's algorithms on arrays and tensors: CAM fusion and files, labels, CRF, metrics, the evaluator;
and the project's config schema."""
