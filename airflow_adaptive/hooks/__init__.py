"""Airflow hooks of airflow-adaptive."""
