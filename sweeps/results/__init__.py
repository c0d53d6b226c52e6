"""Reading a study: ranking, the robust choice, export, status, report and figures."""
