"""PyTorch networks: backbones, fusion, two-way FPN, EfficientPS heads, ST/MT/MBMT nets."""
