"""Where a sweep's points run: this process, a pool of local workers, Ray tasks or Slurm jobs.

An executor is given its task (a callable that turns a point into its file's text) and never imports
it: this layer sits below everything that measures, above only the process plumbing of `resflow._sys`.
"""
