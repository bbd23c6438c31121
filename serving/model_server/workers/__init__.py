"""Front-end worker processes, their supervisor, and the link to the model process."""
