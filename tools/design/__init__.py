"""The design space: the component library, typed architecture specs rendered into code, reference models."""
