"""multi2cap.metrics"""
