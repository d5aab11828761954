"""The rlkube command line: thin click commands that parse, then call the library."""
