"""What analysts read after a load: the views, backup freshness and its alert, the HTML report."""
