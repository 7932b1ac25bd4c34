"""HTTP routes of the gateway, one router per concern; each only translates HTTP to calls on
the classes on `app.state`."""
