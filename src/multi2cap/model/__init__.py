"""multi2cap.model"""
