"""The one inspection pipeline: Observation in; Verdict, SecurityEvents and BanDecisions out."""
