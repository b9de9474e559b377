"""The PyTorch side of Twin GPT.

Submodules hold the framework code; the GPT itself arrives in later chapters. Import them
qualified, never `from course import torch` (that name would shadow torch itself):

    from course.torch.data import make_loader   # random (x, y) batches as a DataLoader
"""
