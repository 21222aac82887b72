"""What people read: the run summary, the HTML report, the model card and the exported model."""
