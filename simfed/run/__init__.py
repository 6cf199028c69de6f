"""Run glue: the only package that joins the simulated world and the learning."""
