"""Readers of other libraries' weights files, each giving a state dict in PyTorch's tensor layouts."""
