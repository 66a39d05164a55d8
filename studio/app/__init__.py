"""The application model: settings, job queue, history. What the UI observes and drives."""
