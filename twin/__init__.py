"""The digital twin: a simulated WMS, ERP and OMS served over HTTP, and the scenario generator."""
