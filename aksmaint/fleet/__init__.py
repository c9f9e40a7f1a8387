"""The fleet's update run as plain data and functions (``flows.fleet`` runs it in Prefect):

- ``models``: the parameters (stages and their limits), the deployments a run can run, the report;
- ``plan``: which deployments each stage runs with which merged parameters, and what is refused;
- ``summary``: each cluster's row, read from its run's report, and the ``fleet-summary`` Markdown.
"""
