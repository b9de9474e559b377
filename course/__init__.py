"""Twin GPT: the course library. The framework-neutral core (config, data, tokenizers,
checks, runtime) imports neither torch nor tensorflow; `course.torch` and `course.tf` hold
the two GPTs."""
