"""Exchange with LEMUR (ABrain-One nn-dataset): import its captioning `Net` files as caption-net-v1 modules,
re-score a folder of them, and export a capnas model as a LEMUR-style `Net` file."""
