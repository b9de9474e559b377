"""The TensorFlow/Keras 3 side of Twin GPT, the mirror of `course.torch`.

Submodules hold the framework code; the Keras GPT arrives in later chapters. Import them
qualified, never `from course import tf`. Each submodule imports TensorFlow through
`course.runtime.import_tensorflow()`, which keeps it safe beside Triton:

    from course.tf.data import make_dataset   # random (x, y) batches as a tf.data.Dataset
"""
