"""Local model files and the remote's: compare and ship (`sync`, `cli`)."""
